//! Packs the working tree into a deterministic tar.gz: the content of the OCI artifact Flux
//! pulls. Uncommitted edits are included (that is the point); ignored files, `.git`,
//! `.devenv/` and `<path>/flux-system/` are not. The same tree always gives the same bytes:
//! entries are sorted, and times, owners and modes are normalised.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use sha2::{Digest, Sha256};

use super::overlay::{self, Change, Settings};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot walk the repository at `{}`", root.display())]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot apply the local overlay to `{path}`")]
    Overlay {
        path: String,
        #[source]
        source: overlay::Error,
    },
    #[error("cannot write the artifact")]
    Write(#[source] io::Error),
}

/// The packed tree.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The tar.gz bytes.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    pub files: usize,
    /// Size of the files before compression.
    pub raw_bytes: u64,
    /// What the overlay changed, by file.
    pub changes: Vec<(String, Change)>,
    /// Namespaces whose Kustomizations substitute from the environment ConfigMap.
    pub substitution_namespaces: BTreeSet<String>,
}

/// Files of the working tree that go into the artifact, as sorted `/`-separated paths.
pub fn list_files(root: &Path, flux_path: &str) -> Result<Vec<String>, Error> {
    let bootstrap_dir = format!("{}/flux-system", flux_path.trim_start_matches("./").trim_end_matches('/'));
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .filter_entry(|entry| !matches!(entry.file_name().to_str(), Some(".git")))
        .build();
    let mut files = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|source| Error::Walk { root: root.to_path_buf(), source })?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let relative: Vec<String> =
            relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let relative = relative.join("/");
        // `flux bootstrap`'s own manifests would reinstall Flux and add a rival root.
        if relative.starts_with(".devenv/") || relative.starts_with(&format!("{bootstrap_dir}/")) {
            continue;
        }
        files.push(relative);
    }
    files.sort();
    Ok(files)
}

/// Packs the tree with the overlay applied to the Flux objects in it.
pub fn pack(root: &Path, flux_path: &str, settings: &Settings) -> Result<Packed, Error> {
    let files = list_files(root, flux_path)?;
    let mut changes = Vec::new();
    let mut substitution_namespaces = BTreeSet::new();
    let mut raw_bytes = 0;
    let encoder = flate2::GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
    let mut archive = tar::Builder::new(encoder);
    archive.mode(tar::HeaderMode::Deterministic);
    for relative in &files {
        let path = root.join(relative);
        let mut content = fs::read(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
        let executable = is_executable(&path);
        if is_yaml(relative)
            && let Ok(text) = std::str::from_utf8(&content)
            && overlay::may_hold_flux_objects(text)
            && let Some(rewritten) =
                overlay::rewrite(text, settings).map_err(|source| Error::Overlay { path: relative.clone(), source })?
        {
            changes.extend(rewritten.changes.into_iter().map(|c| (relative.clone(), c)));
            substitution_namespaces.extend(rewritten.substitution_namespaces);
            content = rewritten.text.into_bytes();
        }
        raw_bytes += content.len() as u64;
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, relative, content.as_slice()).map_err(Error::Write)?;
    }
    let mut encoder = archive.into_inner().map_err(Error::Write)?;
    encoder.flush().map_err(Error::Write)?;
    let bytes = encoder.finish().map_err(Error::Write)?;
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    Ok(Packed { bytes, digest, files: files.len(), raw_bytes, changes, substitution_namespaces })
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::overlay::tests::settings;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(".gitignore", "secrets.env\n/build/\n");
        write("secrets.env", "TOKEN=1\n");
        write("build/out.yaml", "x: 1\n");
        write(".git/HEAD", "ref: refs/heads/main\n");
        write(".devenv/substitutes/rds-mariadb.yaml", "image: x\n");
        write("clusters/local/flux-system/gotk-sync.yaml", "kind: GitRepository\n");
        write(
            "clusters/local/apps.yaml",
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  path: ./apps\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
        );
        write("apps/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\n");
        dir
    }

    #[test]
    fn lists_what_flux_needs_and_nothing_else() {
        let dir = tree();
        let files = list_files(dir.path(), "clusters/local").unwrap();
        assert_eq!(files, [".gitignore", "apps/deployment.yaml", "clusters/local/apps.yaml"]);
        let files = list_files(dir.path(), "./clusters/local/").unwrap();
        assert!(!files.iter().any(|f| f.contains("flux-system")));
    }

    #[test]
    fn the_same_tree_gives_the_same_digest_whatever_the_mtimes() {
        let dir = tree();
        let first = pack(dir.path(), "clusters/local", &settings()).unwrap();
        let deployment = dir.path().join("apps/deployment.yaml");
        let file = fs::File::options().write(true).open(&deployment).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
        let second = pack(dir.path(), "clusters/local", &settings()).unwrap();
        assert_eq!(first.digest, second.digest);
        assert_eq!(first.bytes, second.bytes);

        fs::write(&deployment, "apiVersion: apps/v1\nkind: Deployment # edited\n").unwrap();
        let third = pack(dir.path(), "clusters/local", &settings()).unwrap();
        assert_ne!(first.digest, third.digest, "an uncommitted edit is included");
    }

    #[test]
    fn the_artifact_holds_the_rewritten_flux_objects() {
        let dir = tree();
        let packed = pack(dir.path(), "clusters/local", &settings()).unwrap();
        assert_eq!(packed.files, 3);
        let changed: Vec<&str> = packed.changes.iter().map(|(file, _)| file.as_str()).collect();
        assert_eq!(changed, ["clusters/local/apps.yaml", "clusters/local/apps.yaml"], "sourceRef and patches");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(packed.bytes.as_slice()));
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            assert_eq!(entry.header().uid().unwrap(), 0);
            if name == "clusters/local/apps.yaml" {
                let mut text = String::new();
                io::Read::read_to_string(&mut entry, &mut text).unwrap();
                assert!(text.contains("devenv-source"), "{text}");
            }
            names.push(name);
        }
        assert_eq!(names, [".gitignore", "apps/deployment.yaml", "clusters/local/apps.yaml"]);
        // The file on disk is never edited.
        assert!(!fs::read_to_string(dir.path().join("clusters/local/apps.yaml")).unwrap().contains("devenv-source"));
    }
}
